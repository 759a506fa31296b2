sluice-checkpoint 1
s  1 1
crc32 ce3e7b16
