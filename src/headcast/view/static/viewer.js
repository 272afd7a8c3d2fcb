// headcast viewer: loads /head.glb, orbit controls, plays its first animation; at /live (headcast receive
// --web) it instead follows a live stream over the WebSocket /socket: "head" messages name a GLB to load,
// "frame" messages pose it (theta: 15 axis-angle radians for the skin's 5 joints, psi: morph weights).
// window.__headcast reports state for tests: loaded, error, frames (rendered), time (animation s),
// duration, animations, meshes (glTF meshes), primitives (their parts: the head, then the mouth interior's),
// morphTargets, textured; seek(t) pauses playback at time t (s). Live:
// live, connected, headVersion, received (frames), seq, pose (the joints' quaternions as applied, 5x4),
// weights (the morph weights as applied). Lighting: the GLB's scene extras carry headcast's SH light
// (sh_threejs: 27 LightProbe coefficients, the texture stage's fitted light or the neutral one), shown
// by a LightProbe alone on Lambert materials with no colour-space conversion, so a pixel is
// albedo x SH shading as in headcast's own renders; light ('fitted' | 'neutral' | 'default': a GLB
// without it) and lightProbe (the 27 coefficients in use) report it.
import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

const LIVE = location.pathname.replace(/\/+$/, '') === '/live';
const state = window.__headcast = { loaded: false, error: null, frames: 0, time: 0, duration: 0,
                                    animations: 0, meshes: 0, primitives: 0, morphTargets: 0, textured: false, playing: true,
                                    live: LIVE, connected: false, headVersion: 0, received: 0, seq: -1,
                                    pose: null, weights: null, light: null, lightProbe: null };
const info = document.getElementById('info');
const renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
renderer.setPixelRatio(window.devicePixelRatio);
renderer.setSize(window.innerWidth, window.innerHeight);
renderer.outputColorSpace = THREE.SRGBColorSpace;
document.body.appendChild(renderer.domElement);

const scene = new THREE.Scene();
const BACKGROUND = [0x20 / 255, 0x23 / 255, 0x28 / 255];  // the page's colour, as stored
scene.background = new THREE.Color().setRGB(...BACKGROUND, THREE.SRGBColorSpace);
const defaultLights = [new THREE.HemisphereLight(0xffffff, 0x404048, 1.2), new THREE.DirectionalLight(0xffffff, 1.6)];
defaultLights[1].position.set(0.4, 0.6, 1.0);
const probe = new THREE.LightProbe();

function useLight(extras) {
  // the head's SH light when its GLB has one (see the header), else three's default lights
  const sh = extras && extras.sh_threejs;
  for (const l of [...defaultLights, probe]) scene.remove(l);
  if (!Array.isArray(sh) || sh.length !== 27) {
    for (const l of defaultLights) scene.add(l);
    renderer.outputColorSpace = THREE.SRGBColorSpace;
    scene.background.setRGB(...BACKGROUND, THREE.SRGBColorSpace);
    state.light = 'default'; state.lightProbe = null;
    return false;
  }
  probe.sh.fromArray(sh);
  scene.add(probe);
  renderer.outputColorSpace = THREE.LinearSRGBColorSpace;  // headcast's albedo and shading are not gamma-coded
  scene.background.setRGB(...BACKGROUND, THREE.LinearSRGBColorSpace);  // shown as stored, like the albedo
  state.light = extras.light || 'fitted'; state.lightProbe = sh.slice();
  return true;
}

function lambert(mesh) {
  // the glTF material as a Lambert one (diffuse only, like headcast's SH shading); texture values as stored
  const old = mesh.material;
  const map = old.map || null;
  if (map) { map.colorSpace = THREE.NoColorSpace; map.needsUpdate = true; }
  mesh.material = new THREE.MeshLambertMaterial({ map, color: old.color ? old.color.clone() : 0xffffff,
                                                 vertexColors: old.vertexColors, side: old.side });
  old.dispose();
}
const camera = new THREE.PerspectiveCamera(30, window.innerWidth / window.innerHeight, 0.01, 100);
const controls = new OrbitControls(camera, renderer.domElement);
controls.enableDamping = true;

let mixer = null, action = null;
const clock = new THREE.Clock();

let current = null, skinned = null, morphed = [], framed = false;

function showHead(url, done) {
  new GLTFLoader().load(url, (gltf) => {
    const root = gltf.scene;
    if (current) scene.remove(current);
    current = root;
    scene.add(root);
    state.meshes = (gltf.parser.json.meshes || []).length;
    state.primitives = 0; state.morphTargets = 0; state.textured = false; skinned = null; morphed = [];
    const probed = useLight(root.userData);
    root.traverse((o) => {
      if (o.isMesh) {
        if (probed) lambert(o);
        state.primitives += 1;
        if (o.morphTargetInfluences) morphed.push(o);
        o.frustumCulled = false;  // skinned and morphed: the rest-pose bounds do not follow the animation
        const dict = o.morphTargetDictionary;
        if (dict) state.morphTargets = Math.max(state.morphTargets, Object.keys(dict).length);
        if (o.material && o.material.map) state.textured = true;
        if (o.isSkinnedMesh && !skinned) skinned = o;
      }
    });
    if (!framed) {  // frame the first head only: a new head of the same stream keeps the user's view
      framed = true;
      root.updateMatrixWorld(true);
      const box = new THREE.Box3().setFromObject(root);
      const centre = box.getCenter(new THREE.Vector3());
      const size = box.getSize(new THREE.Vector3()).length();
      camera.position.set(centre.x, centre.y, centre.z + 1.6 * size);
      camera.near = size / 100; camera.far = size * 100; camera.updateProjectionMatrix();
      controls.target.copy(centre);
      controls.update();
    }
    done(gltf);
    state.loaded = true;
  }, undefined, (err) => {
    state.error = String(err && err.message || err);
    info.textContent = 'could not load ' + url + ': ' + state.error;
  });
}

// -- live stream ------------------------------------------------------------------------------
let pending = null, sender = '', rate = 0, lastCount = 0, lastRateAt = performance.now();
const axis = new THREE.Vector3();

function applyFrame(f) {
  if (!skinned) { pending = f; return; }
  const bones = skinned.skeleton.bones;
  for (let j = 0; j < bones.length && 3 * j + 2 < f.theta.length; j++) {
    axis.set(f.theta[3 * j], f.theta[3 * j + 1], f.theta[3 * j + 2]);
    const angle = axis.length();
    if (angle > 1e-12) bones[j].quaternion.setFromAxisAngle(axis.divideScalar(angle), angle);
    else bones[j].quaternion.identity();
  }
  for (const m of morphed) {  // every primitive (head and mouth interior) has the same morph targets
    const mw = m.morphTargetInfluences;
    for (let e = 0; e < mw.length && e < f.psi.length; e++) mw[e] = f.psi[e];
  }
  const w = skinned.morphTargetInfluences;
  state.seq = f.seq;
  state.pose = bones.map((b) => b.quaternion.toArray());
  state.weights = w ? Array.from(w) : null;
}

function connectLive() {
  info.textContent = 'live · waiting for the receiver…';
  // the server's per-run token, from this page's URL (the socket refuses connections without it)
  const token = new URLSearchParams(location.search).get('token') || '';
  const ws = new WebSocket(`ws://${location.host}/socket?token=${encodeURIComponent(token)}`);
  ws.onopen = () => { state.connected = true; info.textContent = 'live · waiting for a sender…'; };
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === 'head') {
      sender = msg.sender || '';
      showHead(msg.url, () => {
        state.headVersion = msg.version;
        if (pending) { const f = pending; pending = null; applyFrame(f); }
      });
    } else if (msg.type === 'frame') {
      state.received += 1;
      applyFrame(msg);
    }
  };
  ws.onclose = () => {  // the receiver stopped or restarted: keep the last picture, try again
    state.connected = false;
    info.textContent = 'live · receiver gone, reconnecting…';
    setTimeout(connectLive, 1000);
  };
}

function liveInfo() {
  const now = performance.now();
  if (now - lastRateAt > 1000) {
    rate = (state.received - lastCount) * 1000 / (now - lastRateAt);
    lastCount = state.received; lastRateAt = now;
    if (state.loaded) info.textContent = `live · ${sender} · ${state.morphTargets} expressions · ` +
      `frame ${state.seq} · ${rate.toFixed(0)} fps · drag to orbit`;
  }
}

if (!LIVE) {
  showHead('/head.glb', (gltf) => {
    state.animations = gltf.animations.length;
    if (gltf.animations.length) {
      mixer = new THREE.AnimationMixer(gltf.scene);
      action = mixer.clipAction(gltf.animations[0]);
      action.play();
      state.duration = gltf.animations[0].duration;
    }
    info.textContent = `headcast · ${state.morphTargets} expressions · ` +
      (state.animations ? `animation ${state.duration.toFixed(1)} s` : 'no animation') + ' · drag to orbit';
  });
} else {
  connectLive();
}

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
  if (LIVE) liveInfo();
  controls.update();
  renderer.render(scene, camera);
  state.frames += 1;
});
