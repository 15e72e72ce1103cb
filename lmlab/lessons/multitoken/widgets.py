"""Lesson 05's widget, thin over :func:`lmlab.generation.speculative.speculative_greedy`:
:func:`draft_explorer` redraws :func:`show_drafts` when a slider is released."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmlab.generation.speculative import speculative_greedy
from lmlab.widgets import require_ipywidgets

__all__ = ["show_drafts", "draft_explorer"]


def show_drafts(model: Any, tokenizer: Any, prompt_ids: Sequence[int], *, n_draft: int, max_new_tokens: int = 30
                ) -> None:
    """Decode ``prompt_ids`` self-speculatively with ``n_draft`` drafts per step: a bar per verifying pass
    (its accepted drafts, and the token head 1 adds), then the text, which is greedy's."""
    import matplotlib.pyplot as plt

    out, stats = speculative_greedy(model, prompt_ids, max_new_tokens=max_new_tokens, n_draft=n_draft,
                                    return_stats=True)
    accepted = stats.accepted_per_step
    fig, ax = plt.subplots(figsize=(7, 2.4))
    ax.bar(range(len(accepted)), [1] * len(accepted), color="C0", label="head 1's own token")
    ax.bar(range(len(accepted)), accepted, bottom=1, color="C1", label="accepted drafts")
    ax.set(xlabel="verifying pass", ylabel="tokens", ylim=(0, model.n_future + 0.5),
           title=f"{n_draft} drafts per step: {stats.new_tokens} tokens in {stats.forward_passes} passes")
    ax.legend(loc="upper right", fontsize=8)
    plt.show()
    rate = "none drafted" if not stats.drafted else f"{stats.accepted} of {stats.drafted} drafts accepted"
    print(f"{rate}; {stats.tokens_per_pass:.2f} tokens per pass")
    print(tokenizer.decode(out))


def draft_explorer(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 30) -> Any:
    """Sliders for the number of drafts (0..H-1) and the prompt: :func:`show_drafts`."""
    w = require_ipywidgets()
    return w.interactive(
        lambda n_draft, prompt: show_drafts(model, tokenizer, prompts[prompt], n_draft=n_draft,
                                            max_new_tokens=max_new_tokens),
        n_draft=w.IntSlider(value=model.n_future - 1, min=0, max=model.n_future - 1, description="drafts",
                            continuous_update=False),
        prompt=w.IntSlider(value=0, min=0, max=len(prompts) - 1, description="prompt", continuous_update=False),
    )
