"""The code under test: an application function that uses an executor."""

from dask_anyio import DaskExecutor


def score(word: str) -> int:
    if not word:
        raise ValueError("empty word")
    return sum(ord(c) - ord("a") + 1 for c in word.lower())


async def best_word(ex: DaskExecutor, words: list[str]) -> str:
    """The word with the highest score, the scores computed on the cluster."""
    scores = await ex.gather(ex.map(score, words))
    return max(zip(scores, words, strict=True))[1]
