"""ZeroMQ bridge to robots: protocol, agent-side server, robot-side client (numpy + pyzmq + msgpack).

``auras serve`` runs the server (server.py); a robot talks to it with ``RobotClient`` (client.py) over the
messages in protocol.py; robot_sim.py is a simulated robot for trying it. See docs/bridge.md.
"""
