"""The tool of the count-words task (``tools: [my_tools.py]``: found beside the task file)."""

from omni_agent import tool


@tool
def count_words(text: str) -> int:
    """Count the words in a text.

    Args:
        text: The text to count.
    """
    return len(text.split())
