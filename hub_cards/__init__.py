"""Publishing to the Hugging Face Hub: the card templates (dataset card, reference-model
card, real-model card, adapter card), shipped in the wheel and rendered through the
core's one sandboxed jinja2 environment owner, so an installed package writes the same
cards as a checkout; and ``push.push_to_hub``, which uploads a built dataset or model."""

from __future__ import annotations

from interrupt_bench.templating import environment, package_dir

CARDS_DIR = package_dir("hub_cards")


def render_card(template: str, **values: object) -> str:
    """Render ``hub_cards/<template>`` with ``values`` (a missing value is an error)."""
    return environment(CARDS_DIR, cards=True).get_template(template).render(**values)
