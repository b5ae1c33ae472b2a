"""Chat templates for checkpoints that ship none (the tests' tiny checkpoints, hand-made ones).

``QWEN3_CHAT_TEMPLATE`` renders the Qwen3 / Qwen3-VL / Qwen3-Omni format with tools: the
``# Tools`` block in the system turn, calls as ``<tool_call>`` blocks, results as
``<tool_response>`` blocks merged into one user turn, images and audio inside any turn
(tool results included), and ``<think>`` kept only for the assistant turns of the current
query, as Qwen3's own templates do. ``QWEN25_OMNI_CHAT_TEMPLATE`` mirrors Qwen2.5-Omni's
template, which ignores ``tools`` (the backend injects the block into the system text then).

Real checkpoints use their own ``chat_template.json``; these exist so a checkpoint without one
goes through the very same ``processor.apply_chat_template`` path.
"""

from __future__ import annotations

__all__ = ["QWEN25_OMNI_CHAT_TEMPLATE", "QWEN3_CHAT_TEMPLATE", "template_supports_tools"]

# Each media item renders one placeholder; the processor expands it to the right number of tokens.
QWEN3_CHAT_TEMPLATE = r"""
{%- macro render_content(content) -%}
{%- if content is string -%}{{- content -}}
{%- else -%}{%- for item in content -%}
{%- if item.type == 'image' or 'image' in item or 'image_url' in item -%}<|vision_start|><|image_pad|><|vision_end|>
{%- elif item.type == 'audio' or 'audio' in item or 'audio_url' in item -%}<|audio_start|><|audio_pad|><|audio_end|>
{%- elif item.type == 'video' or 'video' in item -%}<|vision_start|><|video_pad|><|vision_end|>
{%- elif 'text' in item -%}{{- item.text -}}
{%- endif -%}
{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- if tools -%}
{{- '<|im_start|>system\n' -}}
{%- if messages[0].role == 'system' -%}{{- render_content(messages[0].content) + '\n\n' -}}{%- endif -%}
{{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" -}}
{%- for tool in tools -%}{{- "\n" -}}{{- tool | tojson -}}{%- endfor -%}
{{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" -}}
{%- elif messages[0].role == 'system' -%}
{{- '<|im_start|>system\n' + render_content(messages[0].content) + '<|im_end|>\n' -}}
{%- endif -%}
{%- set ns = namespace(last_query_index=-1) -%}
{%- for message in messages -%}{%- if message.role == 'user' -%}{%- set ns.last_query_index = loop.index0 -%}{%- endif -%}{%- endfor -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{%- if not loop.first -%}{{- '<|im_start|>system\n' + render_content(message.content) + '<|im_end|>\n' -}}{%- endif -%}
{%- elif message.role == 'user' -%}
{{- '<|im_start|>user\n' + render_content(message.content) + '<|im_end|>\n' -}}
{%- elif message.role == 'assistant' -%}
{%- set content = render_content(message.content) if message.content else '' -%}
{{- '<|im_start|>assistant\n' -}}
{%- if message.reasoning_content and loop.index0 > ns.last_query_index -%}
{{- '<think>\n' + message.reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') -}}
{%- else -%}{{- content -}}{%- endif -%}
{%- if message.tool_calls -%}{%- for tool_call in message.tool_calls -%}
{%- if (loop.first and content) or (not loop.first) -%}{{- '\n' -}}{%- endif -%}
{%- if tool_call.function -%}{%- set tool_call = tool_call.function -%}{%- endif -%}
{{- '<tool_call>\n{"name": "' + tool_call.name + '", "arguments": ' -}}
{%- if tool_call.arguments is string -%}{{- tool_call.arguments -}}{%- else -%}{{- tool_call.arguments | tojson -}}{%- endif -%}
{{- '}\n</tool_call>' -}}
{%- endfor -%}{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- elif message.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\n<tool_response>\n' + render_content(message.content) + '\n</tool_response>' -}}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
""".strip()

# Qwen2.5-Omni's own template, reproduced: no tool role and no ``tools`` rendering.
QWEN25_OMNI_CHAT_TEMPLATE = r"""
{%- for message in messages -%}
{%- if loop.first and message.role != 'system' -%}{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' -}}{%- endif -%}
{{- '<|im_start|>' + message.role + '\n' -}}
{%- if message.content is string -%}{{- message.content -}}
{%- else -%}{%- for item in message.content -%}
{%- if item.type == 'image' or 'image' in item or 'image_url' in item -%}<|vision_bos|><|IMAGE|><|vision_eos|>
{%- elif item.type == 'audio' or 'audio' in item or 'audio_url' in item -%}<|audio_bos|><|AUDIO|><|audio_eos|>
{%- elif item.type == 'video' or 'video' in item -%}<|vision_bos|><|VIDEO|><|vision_eos|>
{%- elif 'text' in item -%}{{- item.text -}}
{%- endif -%}
{%- endfor -%}{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
""".strip()


def template_supports_tools(template: str | None) -> bool:
    """Whether a chat template renders the ``tools`` variable (Qwen3 family: yes; Qwen2.5-Omni: no)."""
    return bool(template) and "tools" in template and "tool_call" in template
