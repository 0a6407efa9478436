"""A Tk window for the desktop tests:
`python -m tests.desktop_app STATE_FILE [SCALE] [TITLE] [TEXT_PX]`.

Buttons with text, an icon drawn at SCALE (for template matching at other DPIs), a text field,
a drag area, a scroll counter and a paragraph for OCR. Everything that happens is appended to
STATE_FILE as JSON lines, and the first line says where the widgets are on the screen, so a test
can check what the desktop steps did.
"""

from __future__ import annotations

import json
import sys
import tkinter as tk
from pathlib import Path
from typing import Any

PARAGRAPH = (
    "Invoice 4711 was approved by Maria\n"
    "Total amount due 1280 EUR on Friday\n"
    "Shipping to Berlin warehouse dock seven\n"
    "Order #A-2093: 14 boxes, 3.5 kg each (fragile)\n"
    "Contact: ops@example.com / +49 30 1234-567\n"
    "Due 2026-12-01; pay 96.40 USD by wire transfer"
)


def main() -> None:
    state = Path(sys.argv[1])
    scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    title = sys.argv[3] if len(sys.argv) > 3 else "AutoOps Test App"
    text_px = int(sys.argv[4]) if len(sys.argv) > 4 else 16

    def log(**event: Any) -> None:
        with state.open("a") as out:
            out.write(json.dumps(event) + "\n")

    root = tk.Tk()
    root.title(title)
    root.geometry("900x640+40+40")
    root.configure(background="white")
    root.protocol("WM_DELETE_WINDOW", lambda: (log(kind="closed"), root.destroy()))
    font = ("DejaVu Sans", -16)  # pixels

    top = tk.Frame(root, background="white")
    top.pack(anchor="nw", padx=20, pady=10)
    for name in ("Save", "Cancel"):
        button = tk.Button(
            top, text=name, font=font, command=lambda n=name: log(kind="button", name=n)
        )
        button.pack(side="left", padx=10)
        button.bind("<Button-3>", lambda e, n=name: log(kind="right_click", name=n))
        button.bind("<Double-Button-1>", lambda e, n=name: log(kind="double_click", name=n))

    size = round(64 * scale)
    icon = tk.Canvas(root, width=size, height=size, background="white", highlightthickness=0)
    icon.pack(anchor="nw", padx=20, pady=10)
    s = scale
    icon.create_rectangle(2 * s, 2 * s, 62 * s, 62 * s, fill="#1f4e9c", outline="")
    icon.create_oval(10 * s, 10 * s, 40 * s, 40 * s, fill="#f2c12e", outline="")
    icon.create_polygon(30 * s, 58 * s, 60 * s, 58 * s, 45 * s, 28 * s, fill="#d7263d", outline="")
    icon.create_rectangle(8 * s, 46 * s, 22 * s, 56 * s, fill="white", outline="")
    icon.bind("<Button-1>", lambda e: log(kind="icon_click", x=e.x, y=e.y))

    field = tk.Entry(root, font=font, width=30)
    field.pack(anchor="nw", padx=20, pady=10)
    field.bind("<KeyRelease>", lambda e: log(kind="field", value=field.get()))
    field.bind("<Control-a>", lambda e: log(kind="hotkey", keys="ctrl+a"))

    pad = tk.Canvas(root, width=300, height=120, background="#eeeeee", highlightthickness=0)
    pad.pack(anchor="nw", padx=20, pady=10)
    pad.bind("<ButtonPress-1>", lambda e: log(kind="drag_start", x=e.x, y=e.y))
    pad.bind("<ButtonRelease-1>", lambda e: log(kind="drag_end", x=e.x, y=e.y))
    pad.bind("<Button-4>", lambda e: log(kind="scroll", direction="up"))
    pad.bind("<Button-5>", lambda e: log(kind="scroll", direction="down"))
    pad.bind("<Motion>", lambda e: log(kind="motion", x=e.x, y=e.y))

    text = tk.Label(
        root, text=PARAGRAPH, font=("DejaVu Sans", -text_px), justify="left", background="white"
    )
    text.pack(anchor="nw", padx=20, pady=10)

    def where() -> None:
        def box(widget: tk.Misc) -> dict[str, int]:
            return {
                "x": widget.winfo_rootx(),
                "y": widget.winfo_rooty(),
                "width": widget.winfo_width(),
                "height": widget.winfo_height(),
            }

        buttons = {w.cget("text"): box(w) for w in top.winfo_children()}
        log(kind="ready", buttons=buttons, icon=box(icon), field=box(field), pad=box(pad),
            text=box(text))  # fmt: skip

    root.after(300, where)
    root.mainloop()


if __name__ == "__main__":
    main()
