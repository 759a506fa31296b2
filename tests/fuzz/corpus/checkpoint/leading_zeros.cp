sluice-checkpoint 1
s 007 0010
crc32 3a929d79
