"""Query formats of instruction-tuned embedding models.

intfloat/multilingual-e5-large-instruct expects queries as ``Instruct: {task}\\nQuery: {query}``
with a one-sentence task description, and documents with no instruction at all (its model card;
peers.md C.4). The ``query: ``/``passage: `` prefixes belong to the non-instruct multilingual-e5
models, not to this one.
"""

from __future__ import annotations

from collections.abc import Iterable

E5_DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"
"""The model card's task for web search retrieval."""


def e5_instruct_query(query: str, task: str = E5_DEFAULT_TASK) -> str:
    """``Instruct: {task}\\nQuery: {query}`` for intfloat/multilingual-e5-large-instruct.

    ``task`` must be one non-empty line (a newline would break the format); raises
    :class:`ValueError` otherwise and :class:`TypeError` for non-strings.
    """
    if not isinstance(query, str) or not isinstance(task, str):
        raise TypeError("query and task must be strings")
    task = task.strip()
    if not task:
        raise ValueError("the task description must not be empty")
    if "\n" in task or "\r" in task:
        raise ValueError("the task description must be a single line")
    return f"Instruct: {task}\nQuery: {query}"


def e5_instruct_queries(queries: Iterable[str], task: str = E5_DEFAULT_TASK) -> list[str]:
    """:func:`e5_instruct_query` for each query (documents take no instruction)."""
    return [e5_instruct_query(q, task) for q in queries]


__all__ = ["E5_DEFAULT_TASK", "e5_instruct_queries", "e5_instruct_query"]
