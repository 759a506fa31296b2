sluice-checkpoint 1
a/b 1 1
crc32 d8f8c8d6
