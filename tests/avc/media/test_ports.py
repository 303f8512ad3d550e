import pytest

from avc.media.ports import PortPool, PortPoolExhausted


def test_pool_hands_out_even_ports_only() -> None:
    pool = PortPool(40001, 40010)
    ports = [pool.acquire() for _ in range(pool.size)]
    assert ports == [40002, 40004, 40006, 40008, 40010]
    assert all(p % 2 == 0 for p in ports)


def test_exhausted_pool_raises_and_recovers_after_release() -> None:
    pool = PortPool(40000, 40003)
    a, b = pool.acquire(), pool.acquire()
    with pytest.raises(PortPoolExhausted):
        pool.acquire()
    pool.release(a)
    assert pool.acquire() == a
    assert pool.in_use == 2 and pool.free == 0 and b == 40002


def test_released_port_is_reused_last() -> None:
    pool = PortPool(40000, 40007)
    first = pool.acquire()
    pool.release(first)
    assert [pool.acquire() for _ in range(4)] == [40002, 40004, 40006, first]


def test_double_release_is_refused() -> None:
    pool = PortPool(40000, 40003)
    port = pool.acquire()
    pool.release(port)
    with pytest.raises(ValueError):
        pool.release(port)


@pytest.mark.parametrize(("first", "last"), [(80, 100), (50000, 40000), (70000, 70010), (40001, 40001)])
def test_invalid_ranges_are_refused(first: int, last: int) -> None:
    with pytest.raises(ValueError):
        PortPool(first, last)
