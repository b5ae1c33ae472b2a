"""A desktop script: a virtual display, the desktop tool set, a scripted policy, the run's page.

Runs as written (tests/test_examples_newcomer.py runs it): no model is needed, the scripted
policy replays the raw text a Qwen model writes. Swap ``policy`` for
``load_model("openai:http://127.0.0.1:8000/v1#Qwen/Qwen3-Omni-30B-A3B-Instruct")`` to let a
model drive. Needs apt ``xvfb`` and the ``desktop`` extra.
"""

from omni_agent import Agent, ScriptedModel, VirtualDisplay, load_toolsets

CLICK = '<tool_call>{"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [500, 500]}}</tool_call>'

with VirtualDisplay(width=800, height=600) as display:
    tools = load_toolsets("desktop", options={"display": display.display})
    policy = ScriptedModel([CLICK, "I clicked the middle of the screen."])
    result = Agent(policy, tools, max_steps=3).run("Click the middle of the screen.")

print(result.stop_reason.value, "-", result.answer)
print("page:", result.report)
