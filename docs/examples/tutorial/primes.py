"""The CPU-bound work of the tutorial: count primes, deliberately the slow way."""


def count_primes(start: int, stop: int) -> int:
    """How many primes ``p`` with ``start <= p < stop`` (trial division)."""
    count = 0
    for n in range(max(start, 2), stop):
        if all(n % d for d in range(2, int(n**0.5) + 1)):
            count += 1
    return count
