"""Push a built dataset directory to the Hugging Face Hub, card and all."""

from __future__ import annotations

import os
from pathlib import Path

from interrupt_bench.errors import InterruptBenchError


class HubError(InterruptBenchError):
    """The Hub refused or could not be reached; the local build is untouched."""


def push_to_hub(
    directory: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    repo_type: str = "dataset",
    again: str | None = None,
) -> str:
    """Upload ``directory`` as ``repo_id`` (a dataset, or with ``repo_type="model"`` a
    reference model); a dataset's stale shards on the Hub are removed.

    The README is uploaded as written: a dataset card's YAML ``configs:`` give the Hub
    viewer and ``load_dataset(repo_id, config)`` the same configs as a local load.
    ``again`` is the command that retries the push, named in every error."""
    from huggingface_hub import HfApi, get_token

    directory = Path(directory)
    again = again or f"python -m dataset_builder push {directory} {repo_id}"
    token = get_token()
    if not token:
        raise HubError(
            "no Hugging Face token found: set HF_TOKEN or run `hf auth login`, then push "
            f"again with `{again}` (the {repo_type} is built in {directory})"
        )
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(directory),
            repo_id=repo_id,
            repo_type=repo_type,
            commit_message=f"Upload interrupt-bench {repo_type}",
            delete_patterns=["*/*.parquet"] if repo_type == "dataset" else None,
        )
    except Exception as exc:  # HTTP, auth and connection errors all land here
        raise HubError(
            f"pushing {directory} to {repo_id} failed ({type(exc).__name__}: {exc}); the "
            f"local {repo_type} is intact, fix the cause and run `{again}`"
        ) from None
    return str(getattr(commit, "commit_url", commit))
