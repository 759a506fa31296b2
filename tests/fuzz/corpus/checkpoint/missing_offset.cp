sluice-checkpoint 1
s 1
crc32 00c5adeb
