"""Workspace credentials: a name, a kind and an encrypted payload.

The payload is encrypted by the api before it becomes an event (`ciphertext` is a private
field: never in an envelope, a read model or GraphQL) and decrypted only by the runner whose
step names it. The id follows from workspace and name, so a name is looked up directly.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from command_side.errors import Conflict

KINDS = ("http_bearer", "http_basic", "http_header", "postgres", "openai")


def credential_id(workspace_id: str, name: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"autoops:credential:{workspace_id}:{name}")


class Credential(Aggregate):
    @staticmethod
    def create_id(workspace_id: str, name: str, **_: Any) -> UUID:
        return credential_id(workspace_id, name)

    @event("CredentialCreated")
    def __init__(
        self, workspace_id: str, name: str, kind: str, ciphertext: str, actor_id: str
    ) -> None:
        self.workspace_id = workspace_id
        self.name = name
        self.kind = kind
        self.ciphertext = ciphertext
        self.deleted = False

    def replace(self, kind: str, ciphertext: str, actor_id: str, *, must_be_deleted: bool) -> None:
        """New contents under the same name (a rotated secret, or a deleted name taken again)."""
        if must_be_deleted and not self.deleted:
            raise Conflict(f"credential {self.name!r} exists already", current_version=self.version)
        self._replaced(kind, ciphertext, actor_id, self.workspace_id, self.name)

    @event("CredentialReplaced")
    def _replaced(
        self, kind: str, ciphertext: str, actor_id: str, workspace_id: str, name: str
    ) -> None:
        self.kind = kind
        self.ciphertext = ciphertext
        self.deleted = False

    def delete(self, actor_id: str) -> None:
        if not self.deleted:
            self._deleted(actor_id, self.workspace_id, self.name)

    @event("CredentialDeleted")
    def _deleted(self, actor_id: str, workspace_id: str, name: str) -> None:
        self.deleted = True
