"""Describe an image and speak the description.

    python examples/describe_and_speak.py CHECKPOINT IMAGE OUT.wav [MAX_NEW_TOKENS]
"""
import sys

from omni_agent.loop import Agent
from omni_agent.messages import write_wav
from omni_agent.models.base import GenerationSettings
from omni_agent.runtime import QwenOmniModel

checkpoint, image, out_wav, *rest = sys.argv[1:]
settings = GenerationSettings(max_new_tokens=int(rest[0]) if rest else 128)
agent = Agent(QwenOmniModel.load(checkpoint, enable_talker=True), speak=True, max_steps=1, settings=settings)
result = agent.run("Describe this image in one sentence.", images=[image])
print(result.answer)
write_wav(out_wav, *result.audio.load())
