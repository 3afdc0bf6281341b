"""auras-client: the robot side of the auras bridge (docs/bridge.md). Needs only numpy, pyzmq and
msgpack (OpenCV only if you send JPEG or PNG frames), so it installs on a robot's computer without
torch, Ray or a simulator.

    from auras_client import RobotClient

    with RobotClient("tcp://SERVER:5555", cameras={"front": (84, 84)}, state_dim=4,
                     instruction="push the puck to the green goal") as robot:
        robot.publish({"front": image}, joint_state)
        action = robot.take_action()   # the newest fresh action (H, A), or None
"""

from auras_client.client import ReceivedAction, RobotClient, ServiceError
from auras_client.protocol import SCHEMA_VERSION, ProtocolError

__all__ = ["SCHEMA_VERSION", "ProtocolError", "ReceivedAction", "RobotClient", "ServiceError"]
