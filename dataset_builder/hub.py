"""Push a built dataset directory to the Hugging Face Hub, card and all."""

from __future__ import annotations

import os
from pathlib import Path

from interrupt_bench.errors import InterruptBenchError


class HubError(InterruptBenchError):
    """The Hub refused or could not be reached; the local build is untouched."""


def push_to_hub(directory: str | os.PathLike, repo_id: str, private: bool = False) -> str:
    """Upload ``directory`` as dataset ``repo_id``; stale shards on the Hub are removed.

    The README (with its YAML ``configs:``) is uploaded as written, so the Hub viewer and
    ``load_dataset(repo_id, config)`` see the same configs as a local load."""
    from huggingface_hub import HfApi, get_token

    directory = Path(directory)
    token = get_token()
    if not token:
        raise HubError(
            "no Hugging Face token found: set HF_TOKEN or run `hf auth login`, then push "
            f"again with `python -m dataset_builder push {directory} {repo_id}` "
            f"(the dataset is built in {directory})"
        )
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(directory),
            repo_id=repo_id,
            repo_type="dataset",
            commit_message="Upload interrupt-bench episodes",
            delete_patterns=["*/*.parquet"],
        )
    except Exception as exc:  # HTTP, auth and connection errors all land here
        raise HubError(
            f"pushing {directory} to {repo_id} failed ({type(exc).__name__}: {exc}); the "
            "local dataset is intact, fix the cause and run the push command again"
        ) from None
    return str(getattr(commit, "commit_url", commit))
