"""Hand detection: the multi-stage hand search (`HandSearch`, LiteRT), MediaPipe's palm-only Tasks hand landmarker
(`HandDetector`, the fallback without LiteRT), `make_hand_detector` choosing between them, and boxes given from
elsewhere. Importing this package imports neither mediapipe nor LiteRT; creating a detector does."""
from hamer_ros.detection.boxes import (boxes_for_frame, detection_from_json, detection_to_json,
                                       detections_from_boxes, load_boxes_file)
from hamer_ros.detection.hand_detector import HandDetector, box_from_landmarks, flip_side
from hamer_ros.detection.factory import make_hand_detector
from hamer_ros.detection.hand_search import SEARCH_STAGES, HandSearch
from hamer_ros.detection.model import default_model_path, ensure_hand_landmarker_model

__all__ = ['HandDetector', 'box_from_landmarks', 'flip_side', 'ensure_hand_landmarker_model', 'default_model_path',
           'detections_from_boxes', 'detection_to_json', 'detection_from_json', 'load_boxes_file',
           'boxes_for_frame', 'HandSearch', 'SEARCH_STAGES', 'make_hand_detector']
