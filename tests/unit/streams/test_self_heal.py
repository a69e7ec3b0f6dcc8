"""When a worker restarts itself in place (streams.process.self_heal): the first cluster id it
sees is its cluster, no answer is no news, another id is another cluster; and a worker the group
coordinator has not confirmed for long while the broker answers is stuck outside its group."""
from __future__ import annotations

from features.config import parse_config
from streams.process.self_heal import NOT_A_MEMBER_FLOOR, STOP_BOUND, SelfHeal

CFG = parse_config({}, env={})


def heal(confirmed: float = 0.0) -> SelfHeal:
    return SelfHeal(None, CFG, lambda: confirmed)


def test_another_cluster_id_is_a_restart_and_no_answer_is_not():
    watch = heal()
    assert watch.why_restart(None, 1.0) is None     # the broker did not answer: no news
    assert watch.why_restart("A", 1.0) is None and watch.first == "A"
    assert watch.why_restart("A", 2.0) is None and watch.why_restart(None, 3.0) is None
    why, bound = watch.why_restart("B", 4.0)
    assert "is another one (cluster id A -> B)" in why and bound == STOP_BOUND
    assert watch.first == "A"                       # still compared with the first cluster


def test_unconfirmed_for_long_while_the_broker_answers_is_a_restart():
    assert heal().not_a_member_limit == max(NOT_A_MEMBER_FLOOR,
                                            4 * CFG.kafka.client.session_timeout_seconds)
    watch = heal(confirmed=100.0)
    limit = watch.not_a_member_limit
    assert watch.why_restart("A", 100.0 + limit - 1) is None
    assert watch.why_restart(None, 100.0 + limit + 60) is None     # a broker outage: waited out
    why, _ = watch.why_restart("A", 100.0 + limit + 1)
    assert why.startswith(f"not a member of the consumer group for {limit + 1:.0f} s")


def test_the_watch_looks_from_the_service_start_on_without_waiting_for_faust(monkeypatch):
    """The watch is a service started with the app's services, not a Faust app task (those wait
    for table recovery, which a worker outside its group never completes: chaos seed 44)."""
    import asyncio

    import faust

    from streams.process import self_heal

    restarts: list[str] = []

    async def answers(cfg):
        return "A"
    monkeypatch.setattr(self_heal, "cluster_id", answers)
    monkeypatch.setattr(self_heal, "restart_in_place", lambda why, hard_after: restarts.append(why))
    monkeypatch.setattr(self_heal, "CHECK_EVERY", 0.01)
    app = faust.App("self-heal-test", broker="kafka://127.0.0.1:1")
    watched = SelfHeal(app, CFG, lambda: -10 * NOT_A_MEMBER_FLOOR)
    service = watched.watch
    # a dependency of the app (started with its services, before recovery), no app task
    assert service is not None and service.beacon.parent is app.beacon

    async def run() -> None:
        await service.start()
        try:
            for _ in range(200):
                if restarts:
                    break
                await asyncio.sleep(0.01)
        finally:
            await service.stop()
    asyncio.run(run())
    assert restarts and "not a member of the consumer group" in restarts[0]
