"""Models on this machine: the registry of real pretrained models shipped in pinned
wheels (``registry``), the from-scratch reference Llamas (``reference``), the tiny test
fixtures (``tiny_model``), dtype and device choice (``hardware``) and the session engine
that generates every turn of many sessions on one local model (``engine``).

Used by the lm-eval front end and by training; imports the protocol
(``interrupt_bench``), never a front end."""

from local_models.torch_extensions import hide_broken_extensions

hide_broken_extensions()
