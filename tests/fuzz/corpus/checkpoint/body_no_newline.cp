sluice-checkpoint 1
s 1 2crc32 42668c78
