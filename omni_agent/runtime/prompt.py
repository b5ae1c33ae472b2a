"""Conversation (``omni_agent.messages``) -> the checkpoint's chat template -> processor inputs.

Tools are rendered by the checkpoint's own template when it knows them (Qwen3 family);
otherwise (Qwen2.5-Omni) the Qwen3 ``# Tools`` block is put into the system text and tool
results become ``<tool_response>`` text of one user turn, in call order. Media parts become
placeholders in the template text and, in the same order, entries of the processor's image /
audio / video lists, so the processor expands each placeholder to the right token count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..exceptions import UserError
from ..messages import (
    AssistantMessage,
    AudioPart,
    ImagePart,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
    VideoPart,
)
from ..prompting import render_tool_call, system_with_tools
from .families import Family
from .media import ImageSpec, audio_to_16k, image_for_model

__all__ = ["PreparedPrompt", "build_prompt", "strip_control_tokens", "to_template_messages"]

# Template control tokens inside *content* (a web page, a file, a tool's output) would open
# fake turns or fake media slots; they are neutralised by breaking the token apart.
_CONTROL_TOKEN = re.compile(r"<\|(im_start|im_end|endoftext|[a-z_]*(?:pad|start|end|bos|eos)|IMAGE|AUDIO|VIDEO)\|>")


def _neutralise(text: str) -> str:
    return _CONTROL_TOKEN.sub(lambda m: "<\u200b|" + m.group(1) + "|>", text)


def strip_control_tokens(text: str) -> str:
    """``text`` without template control tokens (for text that is spoken, not read)."""
    return _CONTROL_TOKEN.sub("", text)


@dataclass
class _Media:
    images: list[Any] = field(default_factory=list)
    audios: list[Any] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)


@dataclass
class PreparedPrompt:
    """What goes into generate(): the rendered text and the processor's tensors."""

    text: str
    inputs: Any
    """The processor's BatchFeature (input_ids, attention_mask, pixel_values, input_features, ...)."""
    image_sizes: list[tuple[int, int]]
    """(width, height) of each image as the model saw it, in prompt order."""
    audio_seconds: list[float]

    @property
    def prompt_tokens(self) -> int:
        return int(self.inputs["input_ids"].shape[-1])


class _Converter:
    def __init__(self, family: Family, spec: ImageSpec) -> None:
        self.family = family
        self.spec = spec
        self.media = _Media()

    def items(self, parts: Sequence[Any], *, role: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for part in parts:
            if isinstance(part, TextPart):
                out.append({"type": "text", "text": _neutralise(part.text)})
            elif isinstance(part, ImagePart):
                self.media.images.append(image_for_model(part, self.spec))
                out.append({"type": "image"})
            elif isinstance(part, AudioPart):
                if role == "assistant":
                    continue  # the model's own spoken answer is output, not input
                if not self.family.can_hear:
                    raise UserError(
                        f"{self.family.label} cannot hear: audio input is not supported by this model "
                        "(use a Qwen-Omni checkpoint, or send a transcript as text)"
                    )
                self.media.audios.append(audio_to_16k(part))
                out.append({"type": "audio"})
            elif isinstance(part, VideoPart):
                self.media.videos.append(part.path)
                out.append({"type": "video"})
            else:  # pragma: no cover - the message types admit nothing else
                raise UserError(f"unsupported content part {type(part).__name__}")
        return out


def _text_of(items: list[dict[str, Any]]) -> str:
    return "".join(i["text"] for i in items if i["type"] == "text")


def to_template_messages(
    messages: Sequence[Any],
    *,
    tools: Sequence[dict[str, Any]],
    family: Family,
    image_spec: ImageSpec,
    template_renders_tools: bool,
) -> tuple[list[dict[str, Any]], _Media]:
    """Messages -> chat-template dicts (+ the media in placeholder order)."""
    conv = _Converter(family, image_spec)
    out: list[dict[str, Any]] = []
    inject_tools = bool(tools) and not template_renders_tools
    pending_results: list[dict[str, Any]] = []  # tool results waiting to form one user turn

    def flush_results() -> None:
        if pending_results:
            out.append({"role": "user", "content": list(pending_results)})
            pending_results.clear()

    for message in messages:
        if isinstance(message, ToolMessage):
            items = conv.items(message.result.content, role="tool")
            if template_renders_tools:
                out.append({"role": "tool", "content": items, "name": message.result.name})
            else:
                if pending_results:
                    pending_results.append({"type": "text", "text": "\n"})
                pending_results.append({"type": "text", "text": "<tool_response>\n"})
                pending_results.extend(items)
                pending_results.append({"type": "text", "text": "\n</tool_response>"})
            continue
        flush_results()
        if isinstance(message, SystemMessage):
            items = conv.items(message.content, role="system")
            if inject_tools and not out:
                out.append({"role": "system", "content": system_with_tools(_text_of(items), tools)})
            else:
                out.append({"role": "system", "content": items})
        elif isinstance(message, UserMessage):
            out.append({"role": "user", "content": conv.items(message.content, role="user")})
        elif isinstance(message, AssistantMessage):
            items = conv.items(message.content, role="assistant")
            entry: dict[str, Any] = {"role": "assistant"}
            if template_renders_tools:
                entry["content"] = items
                if message.tool_calls:
                    entry["tool_calls"] = [
                        {"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                        for c in message.tool_calls
                    ]
                if message.thinking:
                    entry["reasoning_content"] = message.thinking
            else:
                blocks = [_text_of(items)] if _text_of(items) else []
                blocks += [render_tool_call(c.name, c.arguments) for c in message.tool_calls]
                entry["content"] = "\n".join(blocks)
            out.append(entry)
        else:
            raise UserError(f"unsupported message type {type(message).__name__}")
    flush_results()
    if inject_tools and not (out and out[0]["role"] == "system"):
        out.insert(0, {"role": "system", "content": system_with_tools(None, tools)})
    return out, conv.media


def build_prompt(
    processor: Any,
    messages: Sequence[Any],
    *,
    tools: Sequence[dict[str, Any]] = (),
    family: Family,
    image_spec: ImageSpec,
    template_renders_tools: bool,
    add_generation_prompt: bool = True,
    assistant_prefix: str = "",
) -> PreparedPrompt:
    """Render the conversation with the checkpoint's template and run the processor on it."""
    if not messages:
        raise UserError("the conversation is empty")
    template_messages, media = to_template_messages(
        messages, tools=tools, family=family, image_spec=image_spec, template_renders_tools=template_renders_tools
    )
    if media.videos and not family.can_hear and family.key != "qwen3_vl":  # pragma: no cover - no such family
        raise UserError(f"{family.label} cannot take video")
    text = processor.apply_chat_template(
        template_messages,
        tools=list(tools) if (tools and template_renders_tools) else None,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )
    text += assistant_prefix
    kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt", "padding": True}
    if media.images:
        kwargs["images"] = media.images
    if media.audios:
        kwargs["audio"] = media.audios
    if media.videos:
        kwargs["videos"] = media.videos
    inputs = processor(**kwargs)
    return PreparedPrompt(
        text=text,
        inputs=inputs,
        image_sizes=[im.size for im in media.images],
        audio_seconds=[len(a) / 16_000 for a in media.audios],
    )
