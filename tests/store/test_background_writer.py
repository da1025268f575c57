import threading

from cisctool.store.background_writer import BackgroundWriter


def test_the_writer_queue_holds_at_most_its_bytes_yet_always_admits_one_item():
    release, consumed = threading.Event(), []
    writer = BackgroundWriter(lambda item: (release.wait(), consumed.append(item)), max_bytes=100)
    writer.put("a", 60)  # an empty queue takes any item
    second = threading.Thread(target=writer.put, args=("b", 60))
    second.start()
    second.join(timeout=0.3)
    assert second.is_alive()  # 60 + 60 > 100: waits while "a" is being written
    release.set()
    second.join(timeout=10)
    assert not second.is_alive()
    writer.put("c", 500)  # larger than the bound: admitted once the queue has drained
    writer.close()
    assert consumed == ["a", "b", "c"]
