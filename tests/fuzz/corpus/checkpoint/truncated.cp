sluice-checkpoint 1
counts 0 42
crc32 de55