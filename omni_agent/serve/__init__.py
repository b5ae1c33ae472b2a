"""``omni-agent serve``: one resident model behind OpenAI Chat Completions and Realtime."""
