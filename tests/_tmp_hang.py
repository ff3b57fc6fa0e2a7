import time


def test_hang(namespace):
    time.sleep(120)
