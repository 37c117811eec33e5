"""The seed's scenario: an ingestion job that keeps 1 MiB per batch in a list until the memory
cap kills it."""
import time

kept = []


def ingest_batch(i):
    kept.append(bytearray(1 << 20))  # INGEST


for i in range(100_000):
    ingest_batch(i)
    time.sleep(0.002)
