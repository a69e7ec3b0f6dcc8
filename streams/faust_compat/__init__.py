"""Every reach into Faust's or aiokafka's private parts, in one package (faust-streaming 0.15,
pinned below 0.16 in pyproject). Nothing outside it touches a private name of either library."""
