sluice-checkpoint 1
s +1 1
crc32 b9ee4a07
