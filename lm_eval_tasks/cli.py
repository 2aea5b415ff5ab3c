"""``interrupt-bench-lm-eval``: lm-eval's own CLI (every flag as documented there) with
the project's models registered beside lm-eval's: ``interrupt-bench-vllm`` (vLLM where
lm-eval's ``vllm`` model cannot load, as next to vLLM's CPU build) and
``interrupt-bench-policy`` (the scripted reference policies).

``local_models`` is imported first, so a torch extension that cannot load beside this
torch is hidden before lm-eval imports transformers (``local_models.torch_extensions``);
in a venv with vLLM's CPU build this is the command for every model, ``hf`` included."""

from __future__ import annotations

import local_models  # noqa: F401  (first: hides torch extensions that cannot load here)


def main() -> int | None:
    import lm_eval.models  # noqa: F401  (lm-eval's own models, before ours join the registry)
    from lm_eval.__main__ import cli_evaluate

    import lm_eval_tasks.scripted_lm
    import lm_eval_tasks.vllm_lm  # noqa: F401  (registers interrupt-bench-vllm)

    return cli_evaluate()


if __name__ == "__main__":
    raise SystemExit(main())
