sluice-checkpoint 1
crc32 ba597875
