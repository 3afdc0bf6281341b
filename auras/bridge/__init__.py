"""ZeroMQ bridge to robots: the agent-side server (server.py) that ``auras serve`` runs, and a simulated
robot to try it (robot_sim.py). The robot side (``RobotClient``) and the wire format are the
``auras-client`` distribution (clients/python, package ``auras_client``), which auras depends on. See
docs/bridge.md.
"""
