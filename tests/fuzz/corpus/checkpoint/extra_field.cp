sluice-checkpoint 1
s 1 2 3
crc32 bab7395c
