"""The asyncio publisher and consumer: nothing blocks the event loop."""

import asyncio

import raftlog


def test_async_publisher_and_consumer(client):
    async def main():
        async with client.async_publisher() as pub:
            assert isinstance(pub, raftlog.AsyncPublisher)
            first = await pub.append(b"aio-first")
            indexes = await asyncio.gather(*(pub.append(b"aio-%04d" % i) for i in range(1000)))
            many = await pub.append_many([b"aio-m-%d" % i for i in range(10)])
            await pub.flush()
        assert pub.closed
        assert list(indexes) == sorted(indexes) and indexes[0] > first and many[0] > indexes[-1]
        got = []

        async def read():
            # Follows with a limit: the node read from may learn of the
            # last commit a moment after the publisher.
            async for record in client.async_consume(start=first, follow=True, limit=1011):
                got.append(record)

        await asyncio.wait_for(read(), 60)
        assert [r.index for r in got] == [first, *indexes, *many]
        assert [r.data for r in got] == [b"aio-first", *(b"aio-%04d" % i for i in range(1000)),
                                          *(b"aio-m-%d" % i for i in range(10))]
        status = await client.async_status()
        assert status["commit_index"] >= many[-1]

    asyncio.run(main())


def test_async_follow_consumer_waits_without_blocking_the_loop(client):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        async with client.async_publisher() as pub:
            start = await pub.append(b"af-start")
            async with client.async_consume(start=start, follow=True) as records:
                assert (await records.__anext__()).data == b"af-start"
                # Nothing new: the wait times out (and is cancelled) while the
                # loop goes on ticking; the cancelled wait loses no record.
                before = ticks
                try:
                    await asyncio.wait_for(records.__anext__(), 0.3)
                    raise AssertionError("a record appeared from nowhere")
                except asyncio.TimeoutError:
                    pass
                assert ticks - before >= 5
                index = await pub.append(b"af-next")
                record = await asyncio.wait_for(records.__anext__(), 30)
                assert (record.index, record.data) == (index, b"af-next")
        ticking.cancel()

    asyncio.run(main())


def test_async_consume_of_an_unreachable_cluster_raises(cluster):
    from conftest import free_udp_ports

    client = raftlog.Client(cluster=f"127.0.0.1:{free_udp_ports(1)[0]}", tls_dir=cluster.tls,
                            timeout=0.5)

    async def main():
        try:
            async for _ in client.async_consume():
                pass
        except raftlog.UnavailableError:
            return True
        return False

    assert asyncio.run(asyncio.wait_for(main(), 30))
