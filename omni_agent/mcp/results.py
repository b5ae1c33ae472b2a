"""MCP tool results <-> :class:`~omni_agent.tool.ToolOutput`, both ways.

MCP -> ours: text blocks become the text the model reads, image blocks (and image resources)
become :class:`~omni_agent.messages.ImagePart` s the model sees, ``structured_content`` is kept
as ``data`` (and shown as JSON when the server sent no text), audio and links are named in the
text. Ours -> MCP: text, images as PNG image content, dict data as structured content.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any

from ..messages import ImagePart
from ..tool import ToolOutput

__all__ = ["from_mcp_result", "to_mcp_result"]


def from_mcp_result(result: Any, *, trusted: bool) -> ToolOutput:
    """A ``CallToolResult`` as a ToolOutput (``untrusted`` unless the server is trusted)."""
    texts: list[str] = []
    images: list[ImagePart] = []
    for block in result.content:
        kind = getattr(block, "type", None)
        if kind == "text":
            texts.append(block.text)
        elif kind == "image":
            _add_image(block.data, block.mime_type, texts, images)
        elif kind == "audio":
            texts.append(f"(audio result, {block.mime_type}, {len(block.data) * 3 // 4} bytes: not shown)")
        elif kind == "resource":
            _add_resource(block.resource, texts, images)
        elif kind == "resource_link":
            texts.append(f"(resource link: {block.name} {block.uri})")
    structured = getattr(result, "structured_content", None)
    if structured is not None and not texts:
        texts.append(json.dumps(structured, ensure_ascii=False, default=str))
    if not texts and not images:
        texts.append("(the tool returned nothing)")
    return ToolOutput(
        text="\n".join(texts), images=images, is_error=bool(result.is_error), data=structured, untrusted=not trusted
    )


def _add_image(data: str, mime: str, texts: list[str], images: list[ImagePart]) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as im:
            im.load()
            image = im.convert("RGB") if im.mode not in ("RGB", "L") else im.copy()
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as exc:
        texts.append(f"(an image result ({mime}) could not be decoded: {exc})")
        return
    images.append(ImagePart.from_pil(image))


def _add_resource(resource: Any, texts: list[str], images: list[ImagePart]) -> None:
    mime = getattr(resource, "mime_type", None) or ""
    text = getattr(resource, "text", None)
    if text is not None:
        texts.append(f"[{resource.uri}]\n{text}")
    elif mime.startswith("image/"):
        _add_image(resource.blob, mime, texts, images)
    else:
        texts.append(f"(binary resource {resource.uri} ({mime or 'unknown type'}): not shown)")


def to_mcp_result(output: ToolOutput) -> Any:
    """A ToolOutput as a ``CallToolResult``: text, PNG images, dict data as structured content."""
    from mcp_types import CallToolResult, ImageContent, TextContent

    content: list[Any] = []
    if output.text or not output.images:
        content.append(TextContent(text=output.text))
    for image in output.images:
        png = image.encode("PNG")
        content.append(ImageContent(data=base64.b64encode(png).decode("ascii"), mime_type="image/png"))
    return CallToolResult(content=content, structured_content=_structured(output.data), is_error=output.is_error)


def _structured(data: Any) -> dict[str, Any] | None:
    if not isinstance(data, dict):
        return None
    try:
        return json.loads(json.dumps(data, ensure_ascii=False))  # JSON-safe copy, or nothing
    except (TypeError, ValueError):
        return None
