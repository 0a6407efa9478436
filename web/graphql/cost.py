"""The cost limit: an estimate of how many fields an operation may answer, checked before
execution so an expensive query is refused without touching a database."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLArgument,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    NamedTypeNode,
    OperationDefinitionNode,
    SelectionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    value_from_ast_untyped,
)
from strawberry.extensions import SchemaExtension

DEFAULT_PAGE_SIZE = 50
PAGE_ARGUMENT = "first"


def estimate_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any] | None = None,
    operation_name: str | None = None,
    *,
    default_page_size: int = DEFAULT_PAGE_SIZE,
) -> int:
    """The most fields the operation can answer: each field counts 1, and the selections of
    a field that takes `first` count once per item of the page it asks for (the literal or
    variable value; the argument's default, else `default_page_size`, when absent).

    Without `operation_name`, the costliest operation of the document counts."""
    estimator = _Estimator(schema, document, default_page_size)
    operations = [
        d
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
        and (operation_name is None or (d.name is not None and d.name.value == operation_name))
    ]
    return max(
        (
            estimator.operation(operation, _with_defaults(operation, variables or {}))
            for operation in operations
        ),
        default=0,
    )


def _with_defaults(
    operation: OperationDefinitionNode, variables: Mapping[str, Any]
) -> dict[str, Any]:
    defaults = {
        definition.variable.name.value: value_from_ast_untyped(definition.default_value)
        for definition in operation.variable_definitions or ()
        if definition.default_value is not None
    }
    return {**defaults, **variables}


class _Estimator:
    def __init__(self, schema: GraphQLSchema, document: DocumentNode, default: int) -> None:
        self.schema = schema
        self.default = default
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.variables: Mapping[str, Any] = {}
        # Fragments are costed once per operation: a document that spreads one fragment
        # many times (or in a cycle, which validation refuses anyway) stays linear to cost.
        self.fragment_costs: dict[str, int] = {}

    def operation(self, operation: OperationDefinitionNode, variables: Mapping[str, Any]) -> int:
        self.variables, self.fragment_costs = variables, {}
        root = self.schema.get_root_type(operation.operation)
        return self.selections(operation.selection_set, root)

    def selections(self, node: SelectionSetNode | None, parent: GraphQLNamedType | None) -> int:
        return sum(self.selection(s, parent) for s in node.selections) if node else 0

    def selection(self, node: SelectionNode, parent: GraphQLNamedType | None) -> int:
        if isinstance(node, FieldNode):
            return self.field(node, parent)
        if isinstance(node, InlineFragmentNode):
            return self.selections(node.selection_set, self.condition(node.type_condition, parent))
        if isinstance(node, FragmentSpreadNode):
            return self.fragment(node.name.value)
        return 0

    def field(self, node: FieldNode, parent: GraphQLNamedType | None) -> int:
        definition = _field(parent, node.name.value)
        child = get_named_type(definition.type) if definition else None
        return 1 + self.page_size(node, definition) * self.selections(node.selection_set, child)

    def fragment(self, name: str) -> int:
        if name not in self.fragment_costs:
            self.fragment_costs[name] = 0
            fragment = self.fragments.get(name)
            if fragment is not None:
                parent = self.condition(fragment.type_condition, None)
                self.fragment_costs[name] = self.selections(fragment.selection_set, parent)
        return self.fragment_costs[name]

    def condition(
        self, node: NamedTypeNode | None, parent: GraphQLNamedType | None
    ) -> GraphQLNamedType | None:
        return self.schema.get_type(node.name.value) if node else parent

    def page_size(self, node: FieldNode, definition: GraphQLField | None) -> int:
        if definition is None or PAGE_ARGUMENT not in definition.args:
            return 1
        value: Any = None
        for argument in node.arguments or ():
            if argument.name.value != PAGE_ARGUMENT:
                continue
            if isinstance(argument.value, IntValueNode):
                value = int(argument.value.value)
            elif isinstance(argument.value, VariableNode):
                value = self.variables.get(argument.value.name.value)
        if not _is_int(value):
            default = _default(definition.args[PAGE_ARGUMENT])
            value = default if _is_int(default) else self.default
        return max(int(value), 0)


def _field(parent: GraphQLNamedType | None, name: str) -> GraphQLField | None:
    if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
        field: GraphQLField | None = parent.fields.get(name)
        return field
    return None


def _default(argument: GraphQLArgument) -> Any:
    # graphql-core keeps an SDL default as a literal, strawberry's as a coerced value.
    if argument.default is not None:
        literal = argument.default.literal
        return value_from_ast_untyped(literal) if literal is not None else argument.default.value
    return argument.default_value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class CostLimiter(SchemaExtension):
    """Refuse, before execution, an operation whose estimated cost exceeds `max_cost`, with a
    `VALIDATION` error naming both. Pass it as a factory: it reads the request's variables."""

    def __init__(self, max_cost: int, default_page_size: int = DEFAULT_PAGE_SIZE) -> None:
        super().__init__()
        self.max_cost = max_cost
        self.default_page_size = default_page_size

    def on_validate(self) -> Iterator[None]:
        # Runs before strawberry's own validation step checks for errors, so an error
        # added here stops the operation. A document already refused is not costed.
        context = self.execution_context
        if context.graphql_document is not None and not context.pre_execution_errors:
            cost = estimate_cost(
                context.schema._schema,
                context.graphql_document,
                context.variables,
                context.operation_name,
                default_page_size=self.default_page_size,
            )
            if cost > self.max_cost:
                context.pre_execution_errors = [
                    *(context.pre_execution_errors or []),
                    cost_error(cost, self.max_cost),
                ]
        yield


def cost_error(cost: int, max_cost: int) -> GraphQLError:
    return GraphQLError(
        f"operation cost {cost} exceeds the limit of {max_cost} (every field counts 1, times "
        "the page size `first` of each enclosing paginated field); ask for fewer fields or "
        "smaller pages",
        extensions={"code": "VALIDATION", "cost": cost, "maxCost": max_cost},
    )
