"""Call a function's handler in the test's own process, for tests that must see inside the call.

The product runs functions one way, :class:`refund_sorter_cli.stepfunctions.LocalLambdas` (a process per
execution environment, as Lambda does). Some tests need the handler in *this* process instead: the permission
recorder (tests/infrastructure/permissions.py) sees only this process's AWS calls, and handler tests patch the
package in-process. This is that test harness, not a second emulator: it sets the function's template
environment here (values already set win) and calls the handler with a Lambda context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from refund_sorter_cli.local_stack import LambdaContext, apply_function_environment, load_handler

if TYPE_CHECKING:
    from refund_sorter_cli.template import Template


def call_handler(template: Template, logical_id: str, event: dict[str, Any]) -> Any:
    """The handler's answer to ``event``, called here with the function's template environment."""
    apply_function_environment(template, logical_id)
    spec = template.function(logical_id)
    context = LambdaContext(template.physical_name(logical_id), spec.memory, spec.timeout)
    return load_handler(template, logical_id)(event, context)
