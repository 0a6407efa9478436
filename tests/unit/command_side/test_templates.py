"""Templates in configs: typed single expressions, text, the sandbox and its limits."""

from __future__ import annotations

import tracemalloc

import pytest

from infra.templates import TemplateFailed, render, template_errors

CONTEXT = {
    "inputs": {"name": "Ada", "ids": [1, 2, 3]},
    "steps": {"fetch": {"output": {"status": 200, "body": {"items": ["a", "b"]}}}},
    "vars": {"limit": 10},
    "execution": {"id": "e1"},
}


def test_one_expression_keeps_its_type_and_text_renders() -> None:
    config = {
        "items": "{{ steps.fetch.output.body.items }}",
        "count": "{{ inputs.ids | length }}",
        "greeting": "Hello {{ inputs.name }} ({{ execution.id }})",
        "nested": [{"n": "{{ vars.limit * 2 }}"}, "plain"],
    }
    assert render(config, CONTEXT) == {
        "items": ["a", "b"],
        "count": 3,
        "greeting": "Hello Ada (e1)",
        "nested": [{"n": 20}, "plain"],
    }


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ inputs.missing }}", "no attribute 'missing'"),
        ("Hi {{ nobody }}", "'nobody' is undefined"),
        ("{{ inputs.__class__.__mro__ }}", "unsafe|undefined|access"),
        ("{{ ''.__class__ }}", "unsafe|undefined|access"),
        ("{{ 'x' * 100000000 }}", "limit"),
        ("{{ 10 ** 100000 }}", "power is too large"),
    ],
)
def test_unsafe_or_broken_templates_fail_naming_the_key(template: str, reason: str) -> None:
    with pytest.raises(TemplateFailed, match=reason) as failed:
        render({"url": template}, CONTEXT)
    assert failed.value.path == "url"


def test_syntax_errors_are_found_before_anything_runs() -> None:
    errors = template_errors({"url": "{{ inputs.id", "headers": {"x": "{% if %}"}, "ok": "a"})
    assert [e.split(":")[0] for e in errors] == ["url", "headers.x"]


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'a'|center(500000000) }}",
        "{{ 'a'.ljust(500000000) }}",
        "{{ '{:>500000000}'.format(1) }}",
        "{{ '%500000000s'|format(1) }}",
        "{{ (1,) * 100000000 }}",
        "{{ 2**64**64**64 }}",
        "{{ 'ab'.replace('', 'x' * 200000) }}",
        "{% for i in range(3000) %}{{ 'x' * 200000 }}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{{ 1/0 }}",
        "{{ inputs.name + 1 }}",
        "{{ range(5) }}",
        "{{ lipsum }}",
        "{{ lipsum(100000) }}",
        # No changing what a template reads: outputs must stay as they were recorded.
        "{% set l = [1] %}{{ (l.extend(l), l.extend(l)) }}",
        "{{ steps.fetch.output.body['items'].append('c') }}",
        "{{ inputs.update({'name': 'Eve'}) }}",
    ],
)
def test_templates_cannot_exhaust_memory_or_time_and_fail_cleanly(template: str) -> None:
    with pytest.raises(TemplateFailed) as failed:
        render({"value": template}, CONTEXT)
    assert failed.value.path == "value"


#: Values that would take gigabytes to build: refused by their size before they are built.
SHARED = "{% set a = ['x' * 100000] %}{% set a = [a, a] %}{% set a = [a, a] %}{% set a = [a, a] %}"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ['x' * 200000] * 2000 }}",  # a list of references, every copy rendered
        "{{ [range(1000) | list] * 250 }}",
        "{{ [''] * 1000000000 }}",
        "{% set a = 'x' * 200000 %}{% set b = a ~ a %}{% set c = b ~ b %}{{ c | length }}",
        "{% set a = 'x' * 200000 %}{% set b = a + a %}{% set c = b + b %}{{ c | length }}",
        "{{ ('x' * 200000).join('y' * 200000) }}",
        "{{ ('y' * 200000) | join('x' * 2000) }}",
        "{{ range(2000) | map('replace', '', 'x' * 200000) | list | length }}",
        "{{ ('ab' * 1000) | replace('', 'x' * 200000) }}",
        "{{ ('ab' * 1000) | replace('a', 'x' * 200000, -1) }}",
        "{{ ('a\n' * 100000) | indent('x' * 100000) }}",
        "{{ ('y' * 1000) | wordwrap(1, true, 'x' * 100000) }}",
        SHARED + "{{ a | tojson | length }}",
        SHARED + "{{ a | string | length }}",
        SHARED + "{{ 'text ' ~ a }}",
        SHARED + "text {{ a }}",
        SHARED + "{{ a }}",
    ],
)
def test_huge_values_are_refused_before_they_are_built(template: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(TemplateFailed, match="would exceed the output limit"):
            render({"value": template}, CONTEXT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000  # megabytes at most, where building it would take gigabytes


def test_percent_formatting_of_text_is_refused_and_the_modulo_of_numbers_is_not() -> None:
    with pytest.raises(TemplateFailed, match="% formatting is not allowed"):
        render({"v": "{{ '%0200000000d' % 1 }}"}, CONTEXT)
    assert render({"v": "{{ 7 % 3 }}"}, CONTEXT) == {"v": 1}


def test_whitespace_control_in_a_single_expression_keeps_its_type() -> None:
    assert render("{{- inputs.ids -}}", CONTEXT) == [1, 2, 3]


def test_the_bounded_operations_still_do_their_ordinary_work() -> None:
    config = {
        "long_join": "{{ range(30000) | join(',') | length }}",
        "by_attribute": "{{ [{'n': 1}, {'n': 2}] | join(',', attribute='n') }}",
        "mapped": "{{ ','.join(inputs.ids | map('string')) }}",
        "indented": "{{ 'a\nb' | indent(2) }}",
        "wrapped": "{{ 'hello world foo' | wordwrap(5) }}",
        "replaced": "{{ 'a-b-c' | replace('-', '+', 1) }}",
        "json": "{{ inputs.ids | tojson }}",
        "modulo": "{{ 7 % 3 }}",
        "joined": "{{ inputs.ids | join(',') }}",
        "method": "{{ '-'.join(['a', 'b']) }}",
        "tilde": "{{ inputs.name ~ '!' ~ vars.limit }}",
        "plus": "{{ inputs.ids + [4] }}",
        "times": "{{ 'ab' * 3 }}",
        "counted": (
            "{% set ns = namespace(n=0) %}{% for i in inputs.ids %}"
            "{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"
        ),
    }
    assert render(config, CONTEXT) == {
        "long_join": 168889,
        "by_attribute": "1,2",
        "mapped": "1,2,3",
        "indented": "a\n  b",
        "wrapped": "hello\nworld\nfoo",
        "replaced": "a+b-c",
        "json": "[1, 2, 3]",
        "modulo": 1,
        "joined": "1,2,3",
        "method": "a-b",
        "tilde": "Ada!10",
        "plus": [1, 2, 3, 4],
        "times": "ababab",
        "counted": "6",
    }
    assert CONTEXT["steps"]["fetch"]["output"]["body"]["items"] == ["a", "b"]
