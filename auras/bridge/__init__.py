"""ZeroMQ bridge to robots: protocol, agent-side server, robot-side client (numpy + pyzmq + msgpack).

Empty until the bridge lands; see docs/ for the plan.
"""
