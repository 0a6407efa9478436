"""Execution and credential mutations: start, cancel, retry from a step, replay; credentials
are encrypted here, before they become events, and never read back."""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any, cast
from uuid import NAMESPACE_URL, UUID, uuid5

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from command_side.errors import Conflict, NotFound, ValidationFailed
from command_side.execution.service import ExecutionService, ReplayReport
from command_side.validation import check_name, json_size
from infra.artifacts import ArtifactStore, from_settings
from infra.keys import credentials_keys
from infra.secrets import CredentialError, Vault, check_credential
from infra.settings import Settings
from web.auth import SECURED
from web.graphql.context import caller, services
from web.graphql.errors import graphql_error, mapped_errors, parse_id

MAX_INPUTS_BYTES = 1024 * 1024


@strawberry.input
class StartExecutionInput:
    workflow_id: strawberry.ID
    #: A published version number; none: the latest published one.
    version: int | None = None
    #: Run the current draft instead of a published version (editors testing a change).
    draft: bool = False
    inputs: JSON = strawberry.field(default_factory=dict)
    #: Idempotency key: the same caller starting again with the same key (a retry after a
    #: lost answer) gets the first execution back, and nothing starts twice.
    client_op_id: str | None = None


@strawberry.input
class CancelExecutionInput:
    execution_id: strawberry.ID
    reason: str = ""


@strawberry.input
class RetryExecutionInput:
    execution_id: strawberry.ID
    #: The step to run again (and everything after it); none: the first failed step.
    from_node_id: strawberry.ID | None = None


@strawberry.input
class CreateCredentialInput:
    name: str
    #: http_bearer {token}, http_basic {username, password}, http_header {name, value},
    #: postgres {url}, openai {api_key, base_url?}
    kind: str
    secret: JSON


@strawberry.input
class DeleteCredentialInput:
    name: str


@strawberry.input
class SetVariableInput:
    name: str
    #: Any JSON value up to 16 KB; not for secrets (those are credentials).
    value: JSON


@strawberry.input
class DeleteVariableInput:
    name: str


@strawberry.type
class VariableSaved:
    name: str


@strawberry.type
class ExecutionStarted:
    execution_id: strawberry.ID
    status: str


@strawberry.type
class ExecutionCancelled:
    execution_id: strawberry.ID
    status: str


@strawberry.type
class Divergence:
    node_id: str
    expected: str
    actual: str


@strawberry.type
class ReplayResult:
    execution_id: strawberry.ID
    status: str
    replayed_steps: int
    deterministic: bool
    divergences: list[Divergence]


@strawberry.type
class CredentialSaved:
    name: str
    kind: str


@cache
def _vault(settings: Settings) -> Vault:
    return Vault(credentials_keys(settings))


@cache
def _artifacts(settings: Settings) -> ArtifactStore:
    return from_settings(settings)


def _service(info: Info[Any, Any]) -> ExecutionService:
    svc = services(info)
    return ExecutionService(svc.execution_store, svc.store)


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with mapped_errors():
        return await asyncio.to_thread(fn, *args, **kwargs)


def _inputs(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationFailed("inputs must be a JSON object", field="inputs")
    if json_size(value, "inputs") > MAX_INPUTS_BYTES:
        raise ValidationFailed(f"inputs are larger than {MAX_INPUTS_BYTES} bytes", field="inputs")
    return cast(dict[str, Any], value)


async def _started_before(
    info: Info[Any, Any], execution_id: UUID, workflow_id: str
) -> ExecutionStarted | None:
    """The execution a `clientOpId` started before, as it is now; None when there is none.
    CONFLICT when the key started another workflow's (a key is the caller's, for one start)."""
    who = caller(info)
    try:
        first = await asyncio.to_thread(_service(info).load, who.workspace_id, execution_id)
    except NotFound:
        return None
    if first.workflow_id != workflow_id:
        raise graphql_error("CONFLICT", "this clientOpId started an execution of another workflow")
    return ExecutionStarted(execution_id=strawberry.ID(str(execution_id)), status=first.status)


@strawberry.type
class ExecutionMutation:
    @strawberry.mutation(permission_classes=SECURED)
    async def start_execution(
        self, info: Info[Any, Any], input: StartExecutionInput
    ) -> ExecutionStarted:
        who = caller(info)
        with mapped_errors():
            inputs = _inputs(input.inputs)
        keyed = (
            uuid5(NAMESPACE_URL, f"autoops:start:{who.workspace_id}:{who.actor_id}:{op}")
            if (op := input.client_op_id)
            else None
        )
        workflow_id = str(parse_id(input.workflow_id))
        if keyed is not None and (first := await _started_before(info, keyed, workflow_id)):
            return first  # before any check: the workflow may have changed since
        with mapped_errors():
            try:
                execution_id = await asyncio.wrap_future(
                    services(info).starter.submit(
                        workspace_id=who.workspace_id,
                        actor_id=who.actor_id,
                        workflow_id=workflow_id,
                        inputs=inputs,
                        version=input.version,
                        draft=input.draft,
                        trigger={"kind": "manual", "by": who.actor_id},
                        execution_id=keyed,
                    )
                )
            except Conflict:
                if keyed is None or not (first := await _started_before(info, keyed, workflow_id)):
                    raise
                return first  # the same key, a moment apart
        return ExecutionStarted(execution_id=strawberry.ID(str(execution_id)), status="QUEUED")

    @strawberry.mutation(permission_classes=SECURED)
    async def cancel_execution(
        self, info: Info[Any, Any], input: CancelExecutionInput
    ) -> ExecutionCancelled:
        who = caller(info)
        execution_id = parse_id(input.execution_id, "execution")
        status = await _call(
            _service(info).cancel,
            who.workspace_id,
            who.actor_id,
            execution_id,
            input.reason or f"cancelled by {who.actor_id}",
        )
        return ExecutionCancelled(execution_id=input.execution_id, status=status)

    @strawberry.mutation(permission_classes=SECURED)
    async def retry_execution(
        self, info: Info[Any, Any], input: RetryExecutionInput
    ) -> ExecutionStarted:
        who = caller(info)
        execution_id = parse_id(input.execution_id, "execution")
        new_id = await _call(
            _service(info).retry,
            who.workspace_id,
            who.actor_id,
            execution_id,
            str(input.from_node_id) if input.from_node_id else None,
        )
        return ExecutionStarted(execution_id=strawberry.ID(str(new_id)), status="QUEUED")

    @strawberry.mutation(permission_classes=SECURED)
    async def replay_execution(
        self, info: Info[Any, Any], execution_id: strawberry.ID
    ) -> ReplayResult:
        who = caller(info)
        artifacts = _artifacts(services(info).settings)
        report: ReplayReport = await _call(
            _service(info).replay,
            who.workspace_id,
            parse_id(execution_id, "execution"),
            artifacts.resolve,
        )
        return ReplayResult(
            execution_id=execution_id,
            status=report.status,
            replayed_steps=report.replayed_steps,
            deterministic=report.deterministic,
            divergences=[
                Divergence(node_id=d.node_id, expected=d.expected, actual=d.actual)
                for d in report.divergences
            ],
        )

    @strawberry.mutation(permission_classes=SECURED)
    async def create_credential(
        self, info: Info[Any, Any], input: CreateCredentialInput
    ) -> CredentialSaved:
        who = caller(info)
        with mapped_errors():
            name = check_name(input.name)
            payload = input.secret
            if not isinstance(payload, dict):
                raise ValidationFailed("secret must be a JSON object", field="secret")
            try:
                check_credential(input.kind, payload)
                ciphertext = _vault(services(info).settings).encrypt(input.kind, payload)
            except CredentialError as exc:
                raise ValidationFailed(str(exc), field="secret") from None
        await _call(
            _service(info).create_credential,
            who.workspace_id,
            who.actor_id,
            name,
            input.kind,
            ciphertext,
        )
        return CredentialSaved(name=name, kind=input.kind)

    @strawberry.mutation(permission_classes=SECURED)
    async def delete_credential(
        self, info: Info[Any, Any], input: DeleteCredentialInput
    ) -> CredentialSaved:
        who = caller(info)
        await _call(_service(info).delete_credential, who.workspace_id, who.actor_id, input.name)
        return CredentialSaved(name=input.name, kind="")

    @strawberry.mutation(
        permission_classes=SECURED,
        description="Create or change a workspace variable; executions started from now on "
        "read it as `vars.<name>`.",
    )
    async def set_variable(self, info: Info[Any, Any], input: SetVariableInput) -> VariableSaved:
        who = caller(info)
        await _call(
            _service(info).set_variable, who.workspace_id, who.actor_id, input.name, input.value
        )
        return VariableSaved(name=input.name)

    @strawberry.mutation(permission_classes=SECURED)
    async def delete_variable(
        self, info: Info[Any, Any], input: DeleteVariableInput
    ) -> VariableSaved:
        who = caller(info)
        await _call(_service(info).delete_variable, who.workspace_id, who.actor_id, input.name)
        return VariableSaved(name=input.name)
