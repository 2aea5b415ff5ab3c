"""The commands a user types (console scripts in ``pyproject.toml``): the main job
(``interrupt-bench-eval``, ``evaluate.py``) and the paper's tables and figures
(``interrupt-bench-reproduce``, ``reproduce.py``). They sit on top of every other
package and nothing imports them."""
