// headcast viewer: loads /head.glb, orbit controls, plays its first animation.
// window.__headcast reports state for tests: loaded, error, frames (rendered), time (animation s),
// duration, animations, meshes, morphTargets, textured; seek(t) pauses playback at time t (s).
import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

const state = window.__headcast = { loaded: false, error: null, frames: 0, time: 0, duration: 0,
                                    animations: 0, meshes: 0, morphTargets: 0, textured: false, playing: true };
const info = document.getElementById('info');
const renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
renderer.setPixelRatio(window.devicePixelRatio);
renderer.setSize(window.innerWidth, window.innerHeight);
renderer.outputColorSpace = THREE.SRGBColorSpace;
document.body.appendChild(renderer.domElement);

const scene = new THREE.Scene();
scene.background = new THREE.Color(0x202328);
scene.add(new THREE.HemisphereLight(0xffffff, 0x404048, 1.2));
const key = new THREE.DirectionalLight(0xffffff, 1.6);
key.position.set(0.4, 0.6, 1.0);
scene.add(key);
const camera = new THREE.PerspectiveCamera(30, window.innerWidth / window.innerHeight, 0.01, 100);
const controls = new OrbitControls(camera, renderer.domElement);
controls.enableDamping = true;

let mixer = null, action = null;
const clock = new THREE.Clock();

new GLTFLoader().load('/head.glb', (gltf) => {
  const root = gltf.scene;
  scene.add(root);
  root.traverse((o) => {
    if (o.isMesh) {
      state.meshes += 1;
      o.frustumCulled = false;  // skinned and morphed: the rest-pose bounds do not follow the animation
      const dict = o.morphTargetDictionary;
      if (dict) state.morphTargets = Math.max(state.morphTargets, Object.keys(dict).length);
      if (o.material && o.material.map) state.textured = true;
    }
  });
  root.updateMatrixWorld(true);
  const box = new THREE.Box3().setFromObject(root);
  const centre = box.getCenter(new THREE.Vector3());
  const size = box.getSize(new THREE.Vector3()).length();
  camera.position.set(centre.x, centre.y, centre.z + 1.6 * size);
  camera.near = size / 100; camera.far = size * 100; camera.updateProjectionMatrix();
  controls.target.copy(centre);
  controls.update();
  state.animations = gltf.animations.length;
  if (gltf.animations.length) {
    mixer = new THREE.AnimationMixer(root);
    action = mixer.clipAction(gltf.animations[0]);
    action.play();
    state.duration = gltf.animations[0].duration;
  }
  state.loaded = true;
  info.textContent = `headcast · ${state.morphTargets} expressions · ` +
    (state.animations ? `animation ${state.duration.toFixed(1)} s` : 'no animation') + ' · drag to orbit';
}, undefined, (err) => {
  state.error = String(err && err.message || err);
  info.textContent = 'could not load head.glb: ' + state.error;
});

state.seek = (t) => {
  state.playing = false;
  if (mixer) { mixer.setTime(t); state.time = t; }
};

window.addEventListener('resize', () => {
  camera.aspect = window.innerWidth / window.innerHeight;
  camera.updateProjectionMatrix();
  renderer.setSize(window.innerWidth, window.innerHeight);
});

renderer.setAnimationLoop(() => {
  const dt = clock.getDelta();
  if (mixer && state.playing) {
    mixer.update(dt);
    state.time = action.time;
  }
  controls.update();
  renderer.render(scene, camera);
  state.frames += 1;
});
