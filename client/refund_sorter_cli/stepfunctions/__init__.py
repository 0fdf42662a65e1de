"""Run the template's nightly state machine on the local stack, with its Lambda tasks in worker processes.

Why our own runner: moto executes state machines (its opt-in ``execute_state_machine`` config), but a
``lambda:invoke`` task goes through moto's Lambda, which needs Docker to run any code; it ignores
``ToleratedFailurePercentage`` and writes empty ResultWriter files; and the executions would run inside the moto
server's process, not where ``refund-sorter batch`` runs. No maintained package runs ASL with in-process Lambda
tasks and these Map features. So this package interprets the definition itself, and only the definition
(``infra/statemachine/nightly.asl.yaml``, the file the template deploys), by concern:

- :mod:`.definition`: the definition read as CloudFormation deploys it, and checked: anything the runner would
  not run the way AWS does is refused before a run starts;
- :mod:`.data`: a state's data flow (paths, payload templates, ResultPath, the 256 KiB quota);
- :mod:`.errors`: Step Functions' errors and which Retry/Catch rule matches which;
- :mod:`.lambdas`: the template's functions in execution environments of their own (processes): environment,
  init limit, timeout, memory, response size, as Lambda enforces them. The project's one Lambda emulator;
- :mod:`.interpreter`: executions: states, retries, catches, choices, the Distributed Map, TimeoutSeconds.

``tests/unit/test_stepfunctions_vs_moto.py`` runs small definitions through both this runner and moto's
executing parser and compares them.
"""

from refund_sorter_cli.stepfunctions.data import fill_template, read_path, write_path
from refund_sorter_cli.stepfunctions.definition import (
    NIGHTLY_STATE_MACHINE,
    check_definition,
    function_arn,
    state_machine_definition,
)
from refund_sorter_cli.stepfunctions.errors import StatesError, UnsupportedDefinitionError
from refund_sorter_cli.stepfunctions.interpreter import Event, Execution, LocalStateMachine
from refund_sorter_cli.stepfunctions.lambdas import LambdaFunctionError, LocalLambdas, cpu_share

__all__ = [
    "NIGHTLY_STATE_MACHINE",
    "Event",
    "Execution",
    "LambdaFunctionError",
    "LocalLambdas",
    "LocalStateMachine",
    "StatesError",
    "UnsupportedDefinitionError",
    "check_definition",
    "cpu_share",
    "fill_template",
    "function_arn",
    "read_path",
    "state_machine_definition",
    "write_path",
]
