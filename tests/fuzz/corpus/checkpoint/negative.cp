sluice-checkpoint 1
s -1 1
crc32 36aebfa7
