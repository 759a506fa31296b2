sluice-checkpoint 2
counts 0 1
crc32 0950b4d4
