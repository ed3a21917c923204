"""``appliance-client``: a desktop's side of pairing, and a tunnel for stock wallets."""
