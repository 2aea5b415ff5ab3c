"""REINFORCE + LoRA on interrupted sessions (``training/reinforce.py`` is the entry).

Importing ``local_models`` first hides the torch extensions that cannot load beside a CPU
torch (``local_models.torch_extensions``) before any module of this package imports
transformers or peft."""

import local_models  # noqa: F401
