"""Privacy machinery: frame leases, zones, policy, anonymization. Pure logic, no hardware."""
