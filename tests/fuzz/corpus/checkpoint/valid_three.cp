sluice-checkpoint 1
counts 0 42
counts 1 0
totals 2 9223372036854775807
crc32 9b6328c3
