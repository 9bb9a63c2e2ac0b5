import { render } from 'preact';
import { App } from './app.js';
// Laid out for 1280 px desktops and 390 px phones; order matters (responsive.css last).
import './styles/base.css';
import './styles/layout.css';
import './styles/widgets.css';
import './styles/responsive.css';

render(<App />, document.getElementById('app') as HTMLElement);
