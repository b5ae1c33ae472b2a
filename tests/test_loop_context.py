"""The screenshot budget: last N images kept, evicted in chunks so the prompt prefix stays stable."""

from __future__ import annotations

import pytest

from omni_agent.context import EVICTED_IMAGE_TEXT, apply_image_budget, evicted_count, render_prompt
from omni_agent.loop import Agent
from omni_agent.messages import ImagePart, TextPart, UserMessage
from omni_agent.models.scripted import ScriptedModel
from omni_agent.observers import observer
from omni_agent.tool import ToolContext, tool
from tests.fixtures.core import solid_image, tool_call


def test_evicted_count_moves_in_chunks() -> None:
    got = [evicted_count(t, max_images=3, chunk=2) for t in range(10)]
    assert got == [0, 0, 0, 0, 0, 2, 2, 4, 4, 6]
    kept = [t - e for t, e in zip(range(10), got)]
    assert all(min(t, 3) <= k <= 4 for t, k in zip(range(10), kept))  # last N always kept, < N + chunk
    assert [evicted_count(t, max_images=2, chunk=1) for t in range(5)] == [0, 0, 0, 1, 2]
    with pytest.raises(ValueError):
        evicted_count(3, max_images=1, chunk=0)


def test_oldest_images_become_placeholders_and_instruction_images_stay() -> None:
    task_image = ImagePart.from_pil(solid_image(200))
    shots = [ImagePart.from_pil(solid_image(i)) for i in range(5)]
    messages = [UserMessage([task_image, TextPart(text="task")])] + [UserMessage([s]) for s in shots]
    sent, dropped = apply_image_budget(messages, max_images=2, chunk=2)
    assert dropped == 2
    assert sent[0] is messages[0]  # the task's own image is never evicted
    assert [m.content[0].text for m in sent[1:3]] == [EVICTED_IMAGE_TEXT] * 2
    assert [m.content[0] for m in sent[3:]] == shots[2:]
    assert isinstance(messages[1].content[0], ImagePart)  # input untouched


@tool
def look() -> str:
    """Looks again."""
    return "looked"


def test_prompt_prefix_is_byte_identical_between_evictions() -> None:
    @observer
    def screen(ctx: ToolContext):
        return [solid_image(ctx.step * 11 + 1)]

    steps = 9
    model = ScriptedModel([tool_call("look")] * (steps - 1) + ["done"])
    result = Agent(model, [look], observers=[screen], max_images=3, image_evict_chunk=2, max_steps=steps).run("x")
    assert result.answer == "done"
    rendered = [render_prompt(r.messages) for r in model.requests]
    images = [sum(isinstance(p, ImagePart) for m in r.messages for p in m.content) for r in model.requests]
    evicted = [
        sum(isinstance(p, TextPart) and p.text == EVICTED_IMAGE_TEXT for m in r.messages for p in m.content)
        for r in model.requests
    ]
    assert max(images) <= 4 and images[-1] >= 3  # N=3 kept, never N + chunk
    assert evicted == [0, 0, 0, 0, 2, 2, 4, 4, 6]  # request k holds k screenshots
    for k in range(1, len(rendered)):
        extends = rendered[k].startswith(rendered[k - 1])
        assert extends == (evicted[k] == evicted[k - 1]), k  # the prefix breaks only at evictions
    # The full history keeps every screenshot; only what is sent is trimmed.
    assert sum(isinstance(p, ImagePart) for m in result.messages for p in m.content) == steps
