
first
second  